return require("vpoller.inventory").discover_method(
  "resource.pool.discover", "ResourcePool", "Discover all ResourcePool managed objects")
