local inventory = require("vpoller.inventory")
local time = require("vpoller.time")

-- The whole snapshot tree, depth first (vPoller listed only two levels).
local function walk(trees, out)
  for _, t in ipairs(trees or {}) do
    out[#out + 1] = {
      createTime = time.python(t.createTime),
      description = t.description,
      id = t.id,
      name = t.name,
      quiesced = t.quiesced and "True" or "False",
      state = t.state,
    }
    walk(t.childSnapshotList, out)
  end
  return out
end

return {
  api = 1,
  name = "vm.snapshot.get",
  description = "Get the snapshots of a VirtualMachine",
  required = { "name" },
  run = function(ctx, req)
    local row = inventory.lookup(ctx, "VirtualMachine", req.name, { "snapshot.rootSnapshotList" })
    if not row then
      return nil, "Cannot find object: " .. tostring(req.name)
    end
    local snapshots = walk(row["snapshot.rootSnapshotList"], {})
    if #snapshots == 0 then
      return nil, "No snapshots found for: " .. tostring(req.name)
    end
    return snapshots, "Successfully retrieved snapshots"
  end,
}
