return require("vpoller.inventory").related_method({
  name = "vm.datastore.get",
  kind = "VirtualMachine",
  property = "datastore",
  description = "Get all Datastores used by a VirtualMachine",
  properties = { "name", "info.url" },
})
