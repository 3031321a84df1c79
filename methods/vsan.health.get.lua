local inventory = require("vpoller.inventory")

return {
  api = 1,
  name = "vsan.health.get",
  description = "Get the VSAN health state of a HostSystem",
  required = { "name" },
  run = function(ctx, req)
    local row, err = inventory.lookup(ctx, "HostSystem", req.name, {
      "runtime.powerState", "runtime.connectionState", "configManager.vsanSystem",
    })
    if not row then
      return nil, err
    end
    if row["runtime.powerState"] ~= "poweredOn" then
      return nil, "Host is not powered on, cannot get VSAN health state"
    end
    if row["runtime.connectionState"] ~= "connected" then
      return nil, "Host is not connected, cannot get VSAN health state"
    end
    local system = row["configManager.vsanSystem"]
    if not system then
      return nil, "Host " .. row.name .. " has no VSAN system"
    end
    local ok, status = pcall(ctx.call, ctx, system, "QueryHostStatus", nil)
    if not ok then
      return nil, "Cannot get VSAN health state: " .. tostring(status)
    end
    return { { name = row.name, uuid = status.uuid, nodeUuid = status.nodeUuid, health = status.health } },
      "Successfully retrieved properties"
  end,
}
