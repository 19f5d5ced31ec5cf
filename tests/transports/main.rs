//! The transports: the system transport over real loopback TCP, UDP and Unix domain
//! sockets, overriding one of its functions, file ranges by `sendfile(2)` and in chunks,
//! and how a socket behaves on any message-path transport (the mock).

#[path = "../support/mod.rs"]
mod support;

mod datagram_sockets_keep_their_promises_at_limits_closes_and_paths;
mod datagrams_leave_and_arrive_in_batches_in_place_on_the_system_transport;
mod dropping_every_address_drains_then_closes_on_any_transport;
mod file_ranges_go_out_by_sendfile_in_place_and_in_bounded_chunks_elsewhere;
mod overriding_only_sendv_keeps_the_system_transport_for_the_rest;
mod real_loopback_listener_echoes_many_clients_byte_exact;
mod real_loopback_peer_limits_close_silent_and_non_reading_peers;
mod real_loopback_tcp_carries_writes_byte_exact;
mod real_udp_exchange_between_two_bound_sockets;
mod real_unix_datagram_sockets_trade_datagrams_with_their_paths;
mod real_unix_stream_sockets_connect_listen_and_echo;
mod socket_buffer_sizes_reach_the_transport_and_the_kernel;
mod std_streams_are_adopted_and_carry_bytes_both_ways;
mod user_transports_table_subsets_filter_stacks_and_arbiters;
mod user_transports_that_break_their_contract_get_typed_answers;
