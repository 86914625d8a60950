import CCurl
import Synchronization
import Threads

/// One thread running libcurl's multi interface: it adds the transfers handed to it, drives all
/// of them with `curl_multi_perform`, sleeps in `curl_multi_poll` until a socket is ready, a
/// timeout is due or `curl_multi_wakeup` brings a new transfer, and completes each one when
/// curl reports it done. Names resolve on curl's resolver threads, so nothing here blocks.
final class TransferLoop: @unchecked Sendable {
    private let multi: UnsafeMutableRawPointer
    private let incoming = Mutex<[Transfer]>([])
    /// Easy handles kept for reuse after `curl_easy_reset` (bounded by the peak of concurrent calls).
    private let idleHandles = Mutex<[UnsafeMutableRawPointer]>([])
    private let started = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    private let running = Atomic<Int>(0)

    init() {
        guard let multi = curl_multi_init() else { preconditionFailure("curl_multi_init failed") }
        self.multi = multi
    }

    var inFlight: Int { running.load(ordering: .relaxed) }

    func takeHandle() -> UnsafeMutableRawPointer? {
        idleHandles.withLock { $0.popLast() } ?? curl_easy_init()
    }

    /// Hands `transfer` to the loop thread (started with the first transfer).
    func start(_ transfer: Transfer) {
        if !started.load(ordering: .acquiring), !started.exchange(true, ordering: .acquiringAndReleasing) {
            // libcurl's own stack needs are small; its callbacks only append to the sink.
            Threads.detach(stackSize: 512 << 10) { [self] in self.run() }
        }
        running.add(1, ordering: .relaxed)
        incoming.withLock { $0.append(transfer) }
        curl_multi_wakeup(multi)
    }

    /// Ends the loop once the transfers in progress are done; the handles are freed then.
    func stop() {
        stopping.store(true, ordering: .releasing)
        if started.load(ordering: .acquiring) {
            curl_multi_wakeup(multi)
        } else {
            cleanUp()
        }
    }

    private func run() {
        var active: [UnsafeMutableRawPointer: Transfer] = [:]
        var stillRunning: Int32 = 0
        while true {
            for transfer in incoming.withLock({ queue -> [Transfer] in defer { queue.removeAll() }; return queue }) {
                if curl_multi_add_handle(multi, transfer.handle) == CURLM_OK {
                    active[transfer.handle] = transfer
                } else {
                    complete(transfer, code: CURLE_FAILED_INIT)
                }
            }
            curl_multi_perform(multi, &stillRunning)
            var queued: Int32 = 0
            while let message = curl_multi_info_read(multi, &queued) {
                guard message.pointee.msg == CURLMSG_DONE, let handle = message.pointee.easy_handle else { continue }
                let code = message.pointee.data.result
                curl_multi_remove_handle(multi, handle)
                if let transfer = active.removeValue(forKey: handle) { complete(transfer, code: code) }
            }
            if active.isEmpty && stopping.load(ordering: .acquiring) && incoming.withLock({ $0.isEmpty }) { break }
            // Sleeps until a socket is ready, curl's next timeout, or a wakeup (at most 1 s).
            curl_multi_poll(multi, nil, 0, 1000, nil)
        }
        cleanUp()
    }

    private func complete(_ transfer: Transfer, code: CURLcode) {
        let result = transfer.result(code)
        curl_easy_reset(transfer.handle)
        idleHandles.withLock { $0.append(transfer.handle) }
        running.subtract(1, ordering: .relaxed)
        transfer.completion?(result)
        transfer.completion = nil
    }

    private func cleanUp() {
        for handle in idleHandles.withLock({ $0 }) { curl_easy_cleanup(handle) }
        curl_multi_cleanup(multi)
    }
}
