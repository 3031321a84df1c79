local inventory = require("vpoller.inventory")

return {
  api = 1,
  name = "vm.discover",
  description = "Discover all VirtualMachine managed objects",
  run = function(ctx, req)
    return inventory.discover(ctx, "VirtualMachine", req)
  end,
}
