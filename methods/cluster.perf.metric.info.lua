return require("vpoller.perf").info_method("cluster.perf.metric.info", "ClusterComputeResource", nil)
