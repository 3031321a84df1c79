return require("vpoller.inventory").related_method({
  name = "datastore.vm.get",
  kind = "Datastore",
  property = "vm",
  description = "Get all VirtualMachines using a Datastore",
  key = "info.url",
})
