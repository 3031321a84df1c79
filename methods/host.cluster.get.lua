local inventory = require("vpoller.inventory")

-- A standalone host's parent is its ComputeResource, named like the host.
return {
  api = 1,
  name = "host.cluster.get",
  description = "Get the cluster a HostSystem belongs to",
  required = { "name" },
  run = function(ctx, req)
    local row, err = inventory.lookup(ctx, "HostSystem", req.name, { "parent" })
    if not row then
      return nil, err
    end
    local parent = ctx:get(row.parent, { "name" })[1]
    return { { name = row.name, cluster = parent.name } }, "Successfully retrieved properties"
  end,
}
