return require("vpoller.inventory").get_method(
  "datacenter.get", "Datacenter", "Get properties of a single Datacenter managed object")
