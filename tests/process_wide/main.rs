//! Tests that need this process to themselves: they compare its count of open
//! descriptors before and after (sockets, listeners, connects, TLS handshakes), or
//! install a process-wide tracing subscriber. Every test here runs in a
//! `support::SerialSystem`, which holds `support::fd_count_lock()` from before its
//! runtime opens a descriptor until its thread has ended and closed the last one, so
//! they run one at a time; no test that does not hold that lock may be added to this
//! crate.

#[path = "../support/mod.rs"]
mod support;

mod a_connect_to_a_multicast_or_broadcast_address_is_a_typed_error;
mod a_datagram_socket_dropped_with_its_arbiter_releases_its_descriptor;
mod a_listener_leaves_no_descriptor_behind;
mod a_socket_buffer_size_past_the_kernels_is_refused_with_no_descriptor_left;
mod a_socket_system_shut_down_mid_write_releases_every_descriptor;
mod a_timed_out_or_abandoned_connect_releases_its_descriptor_at_once;
mod no_descriptor_outlives_its_socket;
mod open_close_cycles_through_a_listener_leave_descriptors_and_registry_as_they_were;
mod servers_under_bursts_and_load_release_every_descriptor;
mod sockets_spread_over_arbiters_carry_every_byte_exact;
mod tls_handshakes_cut_off_by_a_closing_listener_leave_no_descriptor_behind;
