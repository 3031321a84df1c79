return require("vpoller.inventory").get_method(
  "resource.pool.get", "ResourcePool", "Get properties of a single ResourcePool managed object")
