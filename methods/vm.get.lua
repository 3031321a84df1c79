local inventory = require("vpoller.inventory")

return {
  api = 1,
  name = "vm.get",
  description = "Get properties of a single VirtualMachine managed object",
  required = { "name", "properties" },
  run = function(ctx, req)
    return inventory.get(ctx, "VirtualMachine", req)
  end,
}
