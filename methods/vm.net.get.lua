return require("vpoller.inventory").related_method({
  name = "vm.net.get",
  kind = "VirtualMachine",
  property = "network",
  description = "Get all Networks used by a VirtualMachine",
  as_object = "network",
})
