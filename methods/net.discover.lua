return require("vpoller.inventory").discover_method(
  "net.discover", "Network", "Discover all Network managed objects")
