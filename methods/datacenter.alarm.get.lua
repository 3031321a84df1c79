return require("vpoller.alarms").method("datacenter.alarm.get", "Datacenter", nil)
