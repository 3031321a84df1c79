local guest = require("vpoller.guest")
local inventory = require("vpoller.inventory")

return {
  api = 1,
  name = "vm.guest.net.get",
  description = "Get the guest network interfaces of a VirtualMachine",
  required = { "name" },
  run = function(ctx, req)
    local row, err = inventory.lookup(ctx, "VirtualMachine", req.name, { "guest.net" })
    if not row then
      return nil, err
    end
    local attributes = guest.attributes("network", req.properties)
    local nics = {}
    for i, n in ipairs(row["guest.net"] or {}) do
      nics[i] = guest.pick(n, attributes)
    end
    return { name = row.name, net = nics }, "Successfully retrieved properties"
  end,
}
