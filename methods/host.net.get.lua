return require("vpoller.inventory").related_method({
  name = "host.net.get",
  kind = "HostSystem",
  property = "network",
  description = "Get all Networks available to a HostSystem",
  as_object = "network",
})
