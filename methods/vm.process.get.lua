local guest = require("vpoller.guest")
local inventory = require("vpoller.inventory")

-- Needs VMware Tools in the guest and guest OS credentials (username,
-- password in the request).
return {
  api = 1,
  name = "vm.process.get",
  description = "Get the processes running in the guest OS of a VirtualMachine",
  required = { "name" },
  run = function(ctx, req)
    local row, err = inventory.lookup(ctx, "VirtualMachine", req.name, { "guest.toolsRunningStatus" })
    if not row then
      return nil, err
    end
    if row["guest.toolsRunningStatus"] ~= "guestToolsRunning" then
      return nil, row.name .. " is not running VMware Tools"
    end
    if not req.username or not req.password then
      return nil, "Need username and password for authentication in guest system " .. row.name
    end
    local operations = ctx:content().guestOperationsManager
    local manager = ctx:get(operations, { "processManager" })[1].processManager
    local ok, processes = pcall(ctx.call, ctx, manager, "ListProcessesInGuest", {
      vm = row._ref,
      auth = { _type = "NamePasswordAuthentication", interactiveSession = false,
               username = req.username, password = req.password },
    })
    if not ok then
      return nil, "Cannot get guest processes: " .. tostring(processes)
    end
    local attributes = guest.attributes("cmdLine", req.properties)
    local out = {}
    for i, p in ipairs(processes or {}) do
      out[i] = guest.pick(p, attributes)
    end
    return out, "Successfully retrieved properties"
  end,
}
