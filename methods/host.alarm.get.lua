return require("vpoller.alarms").method("host.alarm.get", "HostSystem", nil)
