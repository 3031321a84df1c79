return require("vpoller.perf").info_method("datastore.perf.metric.info", "Datastore", "info.url")
