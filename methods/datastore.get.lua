return require("vpoller.inventory").get_method(
  "datastore.get", "Datastore", "Get properties of a single Datastore managed object", "info.url")
