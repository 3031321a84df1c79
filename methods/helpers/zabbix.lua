return {
  api = 1,
  name = "vpoller.helpers.zabbix",
  description = "Zabbix item values and low-level discovery",
  run = function(reply, req)
    return require("vpoller.zabbix").format(reply, req)
  end,
}
