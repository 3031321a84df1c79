return require("vpoller.inventory").discover_method(
  "host.discover", "HostSystem", "Discover all HostSystem managed objects")
