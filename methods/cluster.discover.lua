return require("vpoller.inventory").discover_method(
  "cluster.discover", "ClusterComputeResource", "Discover all ClusterComputeResource managed objects")
