# One image with both sagas' service binaries, the orders view and `saga`; compose.yaml picks
# one per container.
# Build: docker build -t order-saga .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      -p order-service -p payment-service -p inventory-service -p shipping-service -p orders-view \
      -p trip-service -p flight-service -p hotel-service -p car-service -p billing-service -p saga-cli

FROM debian:bookworm-slim AS runtime
RUN useradd --system --uid 10001 --no-create-home saga \
 && mkdir /data && chown saga /data
COPY --from=build /src/target/release/order-service /src/target/release/payment-service \
     /src/target/release/inventory-service /src/target/release/shipping-service \
     /src/target/release/orders-view \
     /src/target/release/trip-service /src/target/release/flight-service \
     /src/target/release/hotel-service /src/target/release/car-service \
     /src/target/release/billing-service \
     /src/target/release/saga /usr/local/bin/
USER saga
ENV DATA_DIR=/data
VOLUME /data
CMD ["order-service", "--help"]
