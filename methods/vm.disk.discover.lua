local guest = require("vpoller.guest")

return {
  api = 1,
  name = "vm.disk.discover",
  description = "Discover the guest disks of a VirtualMachine",
  required = { "name" },
  run = function(ctx, req)
    local vm, err = guest.disks(ctx, req)
    if not vm then
      return nil, err
    end
    return { vm }, "Successfully discovered objects"
  end,
}
