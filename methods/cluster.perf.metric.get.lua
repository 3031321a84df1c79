return require("vpoller.perf").get_method("cluster.perf.metric.get", "ClusterComputeResource", nil, { needs_interval = true })
