return {
  api = 1,
  name = "vpoller.helpers.cclient",
  description = "The reply as JSON followed by a NUL byte, for the C client",
  run = function(reply, req)
    return vpoller.json.python(reply) .. "\0"
  end,
}
