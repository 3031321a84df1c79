return require("vpoller.inventory").related_method({
  name = "host.datastore.get",
  kind = "HostSystem",
  property = "datastore",
  description = "Get all Datastores available to a HostSystem",
  properties = { "name", "info.url" },
})
