return require("vpoller.inventory").discover_method(
  "datacenter.discover", "Datacenter", "Discover all Datacenter managed objects")
