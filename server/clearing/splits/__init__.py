"""The split domain: what a split of a paid order is (`model`), how it is made, released,
cancelled and refunded (`service`, `release`, `refund`), the accounts it touches
(`accounts`) and how it is stored (`store`, `detail`). Imports neither grpc nor generated
code: `clearing.api.split` validates requests and converts to and from the wire."""
