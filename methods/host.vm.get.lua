return require("vpoller.inventory").related_method({
  name = "host.vm.get",
  kind = "HostSystem",
  property = "vm",
  description = "Get all VirtualMachines running on a HostSystem",
})
