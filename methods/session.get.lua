local time = require("vpoller.time")

return {
  api = 1,
  name = "session.get",
  description = "Get the established sessions",
  run = function(ctx, req)
    local manager = ctx:content().sessionManager
    local ok, rows = pcall(ctx.get, ctx, manager, { "sessionList" })
    if not ok then
      if rows.kind == "no_permission" then
        return nil, "No permissions to view established sessions"
      end
      error(rows, 0)
    end
    -- vCenter answers a user without Sessions.TerminateSession with the
    -- property missing, not with a fault.
    local missing = rows[1] and rows[1]._missing and rows[1]._missing.sessionList
    if missing and missing.kind == "no_permission" then
      return nil, "No permissions to view established sessions"
    end
    local out = {}
    for _, s in ipairs(rows[1].sessionList or {}) do
      -- vPoller sent every value as text.
      out[#out + 1] = {
        key = s.key,
        userName = s.userName,
        fullName = s.fullName,
        loginTime = time.python(s.loginTime),
        lastActiveTime = time.python(s.lastActiveTime),
        ipAddress = s.ipAddress,
        userAgent = s.userAgent,
        callCount = s.callCount and tostring(s.callCount),
      }
    end
    return out, "Successfully retrieved sessions"
  end,
}
