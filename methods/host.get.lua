return require("vpoller.inventory").get_method(
  "host.get", "HostSystem", "Get properties of a single HostSystem managed object")
