return require("vpoller.inventory").related_method({
  name = "net.host.get",
  kind = "Network",
  property = "host",
  description = "Get all HostSystems using a Network",
  as_object = "host",
})
