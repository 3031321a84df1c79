-- For the C client and the Zabbix module, which read up to a NUL.
return {
  api = 1,
  name = "vpoller.helpers.czabbix",
  description = "Zabbix output followed by a NUL byte, for the C client",
  run = function(reply, req)
    return require("vpoller.zabbix").format(reply, req) .. "\0"
  end,
}
