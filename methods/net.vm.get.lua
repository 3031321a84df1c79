return require("vpoller.inventory").related_method({
  name = "net.vm.get",
  kind = "Network",
  property = "vm",
  description = "Get all VirtualMachines using a Network",
  as_object = "vm",
})
