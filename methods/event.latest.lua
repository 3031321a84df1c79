return {
  api = 1,
  name = "event.latest",
  description = "Get the latest registered event",
  run = function(ctx, req)
    local manager = ctx:content().eventManager
    local row = ctx:get(manager, { "latestEvent" })[1]
    local event = row.latestEvent
    if not event then
      return nil, "No event has been registered yet"
    end
    return { { event = event.fullFormattedMessage } }, "Successfully retrieved event"
  end,
}
