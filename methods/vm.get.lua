return require("vpoller.inventory").get_method(
  "vm.get", "VirtualMachine", "Get properties of a single VirtualMachine managed object")
