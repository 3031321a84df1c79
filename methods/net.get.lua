return require("vpoller.inventory").get_method(
  "net.get", "Network", "Get properties of a single Network managed object")
