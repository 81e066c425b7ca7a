/// The `# HELP` text of every metric family (docs/operations.md). swift-metrics has no help
/// text, so `/metrics` adds these lines to what the registry renders.
enum MetricHelp {
  static let text: [String: String] = [
    "apus_grpc_requests_total": "gRPC calls finished, by method and status code.",
    "apus_grpc_request_duration_seconds": "gRPC call duration, by method.",
    "apus_grpc_received_bytes_total": "Request message bytes received, by method.",
    "apus_grpc_sent_bytes_total": "Response message bytes sent (gRPC framing included), by method.",
    "apus_grpc_in_flight_requests": "gRPC calls running now, by method.",
    "apus_grpc_stream_resets_total": "RST_STREAM frames the server sent, by reason.",
    "apus_grpc_goaways_total": "GOAWAY frames the server sent, by reason.",
    "apus_grpc_connections": "Open client connections on all gRPC listeners.",
    "apus_store_hits_total": "Reads and FindMissingBlobs keys that found the key, by named store.",
    "apus_store_misses_total": "Reads and FindMissingBlobs keys that did not find the key, by named store.",
    "apus_store_read_bytes_total": "Bytes read from a named store.",
    "apus_store_written_bytes_total": "Bytes written to a named store.",
    "apus_store_errors_total": "Store operations that failed, by named store and operation.",
    "apus_store_evictions_total": "Entries evicted for space or expiry, by named store.",
    "apus_store_entries": "Entries held now, by named store.",
    "apus_store_bytes": "Bytes held now, by named store.",
    "apus_store_write_behind_entries": "Blobs waiting to be copied to the slow tier, by named store.",
    "apus_store_write_behind_bytes": "Bytes waiting to be copied to the slow tier, by named store.",
    "apus_circuit_breaker_open": "1 while the circuit breaker of a remote backend is open or half-open.",
    "apus_s3_requests_total": "S3 requests, by verb and HTTP status (error: no response).",
    "apus_s3_retries_total": "S3 requests retried, by verb.",
    "apus_s3_request_duration_seconds": "S3 request duration, by verb.",
    "apus_compression_bytes_total": "Bytes through REAPI zstd compression, by direction and form (compressed, uncompressed).",
    "apus_action_cache_lookups_total": "Action cache lookups, by instance and result (hit, miss).",
    "apus_scheduler_actions_queued": "Actions waiting for a worker, by scheduler and platform.",
    "apus_scheduler_actions_running": "Actions running on workers, by scheduler.",
    "apus_scheduler_actions_total": "Actions finished, by scheduler and outcome.",
    "apus_scheduler_actions_retried_total": "Actions queued again after their worker was lost, by scheduler.",
    "apus_scheduler_executions_rejected_total": "Executes refused by scheduler and reason (queue_full: the instance had max_queued_actions queued).",
    "apus_scheduler_queue_wait_seconds": "Time from queued to handed to a worker, by scheduler.",
    "apus_scheduler_execution_seconds": "Time from handed to a worker to finished, by scheduler.",
    "apus_scheduler_workers": "Workers connected, by scheduler.",
    "apus_scheduler_slots": "Action slots of the connected workers, by scheduler.",
    "apus_scheduler_slots_busy": "Action slots in use, by scheduler.",
    "apus_scheduler_desired_workers": "Workers the queued and running work needs (see /status), by scheduler.",
    "apus_worker_actions_total": "Actions this worker ran, by outcome.",
    "apus_worker_input_fetch_bytes_total": "Input bytes the worker fetched from the CAS.",
    "apus_worker_input_fetch_seconds": "Time to bring an action's inputs into place.",
    "apus_worker_input_cache_hits_total": "Input files found in the worker's local cache.",
    "apus_worker_input_cache_misses_total": "Input files not in the worker's local cache.",
    "apus_worker_output_upload_bytes_total": "Output bytes the worker uploaded.",
    "apus_worker_output_upload_seconds": "Time to upload an action's outputs.",
    "apus_worker_registrations_total": "Registrations with a scheduler; each past the first is a reconnection.",
    "apus_worker_results_dropped_total": "Results dropped while no scheduler was reachable, past the 10,000 kept.",
    "apus_build_info": "Always 1; the version is a label.",
    "apus_uptime_seconds": "Seconds since the process started.",
    "apus_process_resident_memory_bytes": "Resident memory of the process.",
    "apus_process_open_fds": "Open file descriptors of the process.",
    "apus_process_cpu_seconds_total": "CPU time (user and system) of the process.",
  ]

  /// `rendered` with a `# HELP` line before each `# TYPE` line that has one here.
  static func annotate(_ rendered: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(rendered.count + rendered.count / 4)
    let typePrefix = Array("# TYPE ".utf8)
    var lineStart = 0
    for i in rendered.indices where rendered[i] == 0x0A {
      let line = rendered[lineStart...i]
      if line.starts(with: typePrefix) {
        let rest = line.dropFirst(typePrefix.count)
        let name = String(decoding: rest.prefix { $0 != 0x20 }, as: UTF8.self)
        if let help = text[name] { out += Array("# HELP \(name) \(help)\n".utf8) }
      }
      out += line
      lineStart = i + 1
    }
    out += rendered[lineStart...]
    return out
  }
}
