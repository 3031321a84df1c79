-- A datastore's hosts come as DatastoreHostMount entries; their `key` is the host.
return require("vpoller.inventory").related_method({
  name = "datastore.host.get",
  kind = "Datastore",
  key = "info.url",
  property = "host",
  description = "Get all HostSystems using a Datastore",
  refs = function(mounts)
    local hosts = {}
    for _, m in ipairs(mounts) do
      hosts[#hosts + 1] = m.key
    end
    return hosts
  end,
})
