return require("vpoller.alarms").method("datastore.alarm.get", "Datastore", "info.url")
