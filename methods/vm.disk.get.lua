local guest = require("vpoller.guest")

-- `key` is the guest disk path, e.g. "/" or "C:\\".
return {
  api = 1,
  name = "vm.disk.get",
  description = "Get properties of one guest disk of a VirtualMachine",
  required = { "name" },
  run = function(ctx, req)
    local vm, err = guest.disks(ctx, req)
    if not vm then
      return nil, err
    end
    if not req.key then
      return { vm }, "Successfully discovered objects"
    end
    for _, disk in ipairs(vm.disk) do
      if disk.diskPath == req.key then
        return { { name = req.name, disk = disk } }, "Successfully retrieved properties"
      end
    end
    return nil, "Unable to find guest disk " .. req.key
  end,
}
