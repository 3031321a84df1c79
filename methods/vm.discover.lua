return require("vpoller.inventory").discover_method(
  "vm.discover", "VirtualMachine", "Discover all VirtualMachine managed objects")
