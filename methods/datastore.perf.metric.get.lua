return require("vpoller.perf").get_method("datastore.perf.metric.get", "Datastore", "info.url")
