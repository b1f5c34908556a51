//! The SSE-IO conformance suite, run against every adapter's harness binary.
//!
//! Each case is written once in `cases/` as `async fn case(h: &Harness)`; `conformance_suite!`
//! instantiates every case for one adapter as a `#[tokio::test]` in a module named after the
//! adapter, each test with its own harness process, so a failure reads `hyper::fetch_holds_back`.
//! Adding an adapter is one line at the bottom of this file.
//!
//! With `SERVER_URL=http://host:port` set, no harness is started: every case runs against that
//! server instead (see `conformance-tests/README.md`).

pub mod cases;

/// Expands to `mod $adapter { ... }` with one `#[tokio::test]` per case, each starting the
/// harness binary `$bin` (a `[[bin]]` of this package) on its own free port.
macro_rules! conformance_suite {
    ($adapter:ident, $bin:literal) => {
        conformance_suite!(@cases $adapter, $bin;
            bad_input::missing_client_id_is_400,
            bad_input::missing_events_is_400,
            bad_input::empty_client_id_is_400,
            bad_input::empty_events_is_400,
            bad_input::malformed_percent_encoding_is_400,
            bad_input::invalid_utf8_after_decoding_is_400,
            bad_input::other_methods_are_405_with_allow,
            bad_input::head_answers_headers_without_stream,
            malformed::malformed_requests_get_4xx_and_others_keep_streaming,
            stream::http1_stream_headers,
            stream::http2_stream_headers_and_delivery,
            stream::opening_newline_arrives_at_once,
            stream::frame_is_event_line_then_data_line,
            stream::multiline_payloads_become_several_data_lines,
            stream::json_message_arrives_as_json_text,
            stream::large_payload_arrives_intact,
            stream::heartbeat_every_three_seconds,
            routing::hello_route_beside_sseio,
            routing::unknown_path_is_404,
            routing::near_miss_paths_are_not_the_sse_path,
            routing::control_send_unknown_event_is_404,
            rooms::send_reaches_every_client_in_room,
            rooms::send_skips_other_rooms,
            rooms::rooms_are_per_handler,
            rooms::query_event_joins_room_from_query,
            rooms::query_values_are_percent_decoded,
            rooms::unknown_events_are_ignored,
            rooms::repeated_events_keys_subscribe_to_each,
            rooms::two_hundred_clients_get_every_send_once_in_order,
            lifecycle::conn_create_and_room_create_are_logged,
            lifecycle::send_right_after_conn_create_is_delivered,
            lifecycle::room_empty_when_last_client_leaves,
            lifecycle::closing_leaves_every_room,
            lifecycle::conn_close_once_promptly_without_error,
            lifecycle::replacement_closes_old_stream_and_keeps_new,
            lifecycle::replacement_leaves_the_old_rooms,
            lifecycle::http2_stream_reset_closes_only_that_stream,
            fetch::fetch_holds_back,
            fetch::fetch_error_is_reported_and_messages_still_delivered,
            history::last_event_id_replays_exactly_the_missed_messages,
            history::client_id_reconnect_replays_the_missed_messages,
            history::a_gap_larger_than_the_history_gets_fetch_and_no_partial_replay,
            auth::auth_token_is_required,
            auth::forbidden_event_is_403_naming_it,
            cors::cors_preflight_is_204,
            drain::sigterm_drains_spreading_the_closes,
            cors::cors_streams_for_the_allowed_origin_only,
            limits::too_many_events_is_400,
            limits::connection_limit_is_503_with_retry_after,
            limits::oversized_message_is_413,
            limits::slow_reader_is_cut_off_and_the_others_get_everything,
            metrics::metrics_follow_streams_sends_and_closes,
            metrics::metrics_count_resumes,
            js_client::official_js_client,
            js_client::js_clients_resume_with_history,
        );
    };
    (@cases $adapter:ident, $bin:literal; $($module:ident :: $case:ident),+ $(,)?) => {
        mod $adapter {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let harness = conformance_tests::Harness::start(
                        stringify!($adapter),
                        env!(concat!("CARGO_BIN_EXE_", $bin)),
                        &[],
                    )
                    .await;
                    crate::cases::run_case(
                        &harness,
                        stringify!($case),
                        crate::cases::$module::$case(&harness),
                    )
                    .await;
                }
            )+
        }
    };
}

conformance_suite!(hyper, "harness-hyper");
conformance_suite!(warp, "harness-warp");
conformance_suite!(poem, "harness-poem");
conformance_suite!(salvo, "harness-salvo");

/// Expands to `mod $name { ... }` with one `#[tokio::test]` per cluster case, each on a fresh
/// cluster made by `$make` (a fresh `redis-server` too, when it has one).
macro_rules! cluster_suite {
    ($name:ident, $make:expr; $($case:ident),+ $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use crate::cases::cluster::Cluster;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    #[allow(unused_mut)]
                    let mut cluster: Cluster = $make.await;
                    let limit = crate::cases::CASE_LIMIT;
                    tokio::time::timeout(limit, crate::cases::cluster::$case(&mut cluster))
                        .await
                        .unwrap_or_else(|_| panic!("{} did not finish within {limit:?}", stringify!($case)));
                }
            )+
        }
    };
}

const HYPER: (&str, &str) = ("hyper", env!("CARGO_BIN_EXE_harness-hyper"));
const WARP: (&str, &str) = ("warp", env!("CARGO_BIN_EXE_harness-warp"));
const POEM: (&str, &str) = ("poem", env!("CARGO_BIN_EXE_harness-poem"));
const SALVO: (&str, &str) = ("salvo", env!("CARGO_BIN_EXE_harness-salvo"));

cluster_suite!(cluster_memory, Cluster::memory(super::HYPER.1);
    send_reaches_every_node_once_in_order,
    presence_counts_every_node,
    client_id_moving_to_another_node_replaces_the_old_stream,
    send_to_client_and_disconnect_reach_any_node,
);

cluster_suite!(cluster_redis, Cluster::redis(&[super::HYPER, super::WARP, super::SALVO]);
    send_reaches_every_node_once_in_order,
    presence_counts_every_node,
    client_id_moving_to_another_node_replaces_the_old_stream,
    send_to_client_and_disconnect_reach_any_node,
    rooms_are_unsubscribed_when_empty,
    redis_restart_keeps_streams_and_resumes_delivery,
);

cluster_suite!(cluster_history_memory, Cluster::memory_with_history(super::HYPER.1);
    official_client_resumes_on_another_node,
    last_event_id_resumes_on_another_node,
);

cluster_suite!(cluster_history_redis, Cluster::redis_with_history(&[super::HYPER, super::WARP, super::POEM]);
    official_client_resumes_on_another_node,
    last_event_id_resumes_on_another_node,
    history_in_redis_is_one_capped_stream_per_room,
    a_new_sequence_after_redis_restarts_reaches_resumed_clients,
    history_scripts_are_loaded_again_after_a_script_flush,
);

cluster_suite!(cluster_redis_sharded, Cluster::redis_sharded(&[super::POEM, super::HYPER]);
    send_reaches_every_node_once_in_order,
    presence_counts_every_node,
    client_id_moving_to_another_node_replaces_the_old_stream,
    send_to_client_and_disconnect_reach_any_node,
    rooms_are_unsubscribed_when_empty,
);
