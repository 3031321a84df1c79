-- Guest OS data objects (disks, NICs) reduced to the attributes a request
-- asks for, as vPoller did: a missing attribute reads "(null)".
local M = {}

function M.pick(object, attributes)
  local out = {}
  for _, a in ipairs(attributes) do
    local v = object[a]
    if v == nil then
      v = "(null)"
    end
    out[a] = v
  end
  return out
end

-- `first` and then the requested attributes, without repeats.
function M.attributes(first, requested)
  local out = { first }
  for _, a in ipairs(requested or {}) do
    if a ~= first then
      out[#out + 1] = a
    end
  end
  return out
end

-- The guest disks of a VM, each with the requested attributes.
function M.disks(ctx, req)
  local inventory = require("vpoller.inventory")
  local row, err = inventory.lookup(ctx, "VirtualMachine", req.name, { "guest.disk" })
  if not row then
    return nil, err
  end
  local attributes = M.attributes("diskPath", req.properties)
  local disks = {}
  for i, d in ipairs(row["guest.disk"] or {}) do
    disks[i] = M.pick(d, attributes)
  end
  return { name = row.name, disk = disks }
end

return M
