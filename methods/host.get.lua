local inventory = require("vpoller.inventory")

return {
  api = 1,
  name = "host.get",
  description = "Get properties of a single HostSystem managed object",
  required = { "name", "properties" },
  run = function(ctx, req)
    return inventory.get(ctx, "HostSystem", req)
  end,
}
