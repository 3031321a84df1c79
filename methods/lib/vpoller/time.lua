-- Times as vPoller 0.7.3 printed them: Python's str(datetime), e.g.
-- "2026-11-26 18:58:42.079269+00:00", from the RFC 3339 text vSphere sends.
local M = {}

function M.python(rfc3339)
  if type(rfc3339) ~= "string" then
    return rfc3339
  end
  local date, clock, fraction, zone = rfc3339:match("^(%d+%-%d+%-%d+)T(%d+:%d+:%d+)(%.?%d*)(.*)$")
  if not date then
    return rfc3339
  end
  local micro = ""
  if #fraction > 1 then
    local digits = (fraction:sub(2) .. "000000"):sub(1, 6)
    if digits ~= "000000" then
      micro = "." .. digits
    end
  end
  if zone == "Z" or zone == "" then
    zone = "+00:00"
  end
  return date .. " " .. clock .. micro .. zone
end

return M
