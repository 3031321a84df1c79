-- vPoller 0.2.0's name for vm.net.get, kept so old templates keep working.
return require("vpoller.inventory").related_method({
  name = "vm.net.discover",
  kind = "VirtualMachine",
  property = "network",
  description = "Get all Networks used by a VirtualMachine (the 0.2.0 name of vm.net.get)",
  as_object = "network",
})
