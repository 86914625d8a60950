import CCurl
import CSystem
import Glibc
import Synchronization
import Threads

/// One thread running libcurl's multi interface the event-driven way (`curl_multi_socket_action`
/// with epoll): curl says which sockets to watch and when its next timeout is due; the loop
/// waits in `epoll_wait` and hands curl only the sockets that are ready. The cost of a wakeup
/// does not grow with the number of calls in flight (polling every socket did: ~10 % of the
/// worker's CPU with 256 calls waiting on a slow CRM). New transfers arrive through a queue
/// and an eventfd. Names resolve on curl's resolver threads, so nothing here blocks.
final class TransferLoop: @unchecked Sendable {
    private let multi: UnsafeMutableRawPointer
    private let epoll: Int32
    /// Written to bring the loop out of `epoll_wait` for new transfers or a stop.
    private let wake: Int32
    private let incoming = Mutex<[Transfer]>([])
    /// Easy handles kept for reuse after `curl_easy_reset`, at most `maxIdleHandles` (~5 KiB
    /// each): a burst of calls (say 512 at once while a client reconnects) leaves no more behind.
    private let idleHandles = Mutex<[UnsafeMutableRawPointer]>([])
    static let maxIdleHandles = 64
    private let started = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    private let running = Atomic<Int>(0)

    // Touched by the loop thread only (curl's callbacks run inside its calls to curl).
    private var active: [UnsafeMutableRawPointer: Transfer] = [:]
    private var watched: Set<Int32> = []
    /// When curl wants `CURL_SOCKET_TIMEOUT` next (nil: no timer).
    private var timerDeadline: Deadline?

    init() {
        guard let multi = curl_multi_init() else { preconditionFailure("curl_multi_init failed") }
        self.multi = multi
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        wake = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        precondition(epoll >= 0 && wake >= 0, "epoll/eventfd: \(errno)")
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.fd = wake
        epoll_ctl(epoll, EPOLL_CTL_ADD, wake, &event)

        let me = Unmanaged.passUnretained(self).toOpaque()
        crm_multi_setopt_ptr(multi, CURLMOPT_SOCKETDATA, me)
        crm_multi_setopt_socketfn(multi) { _, socket, what, user, _ in
            Unmanaged<TransferLoop>.fromOpaque(user!).takeUnretainedValue().watch(socket, what)
            return 0
        }
        crm_multi_setopt_ptr(multi, CURLMOPT_TIMERDATA, me)
        crm_multi_setopt_timerfn(multi) { _, timeoutMS, user in
            let loop = Unmanaged<TransferLoop>.fromOpaque(user!).takeUnretainedValue()
            loop.timerDeadline = timeoutMS < 0 ? nil : Deadline.after(seconds: Double(timeoutMS) / 1000)
            return 0
        }
    }

    var inFlight: Int { running.load(ordering: .relaxed) }
    var idleHandleCount: Int { idleHandles.withLock { $0.count } }

    func takeHandle() -> UnsafeMutableRawPointer? {
        idleHandles.withLock { $0.popLast() } ?? curl_easy_init()
    }

    /// Hands `transfer` to the loop thread (started with the first transfer).
    func start(_ transfer: Transfer) {
        if !started.load(ordering: .acquiring), !started.exchange(true, ordering: .acquiringAndReleasing) {
            // libcurl's own needs are small, but tasks waiting on a transfer continue on this
            // thread (InlineExecutor): their steps get the usual 1 MiB.
            Threads.detach(stackSize: 1 << 20) { [self] in self.run() }
        }
        running.add(1, ordering: .relaxed)
        incoming.withLock { $0.append(transfer) }
        eventfd_write(wake, 1)
    }

    /// Ends the loop once the transfers in progress are done; the handles are freed then.
    func stop() {
        stopping.store(true, ordering: .releasing)
        if started.load(ordering: .acquiring) {
            eventfd_write(wake, 1)
        } else {
            cleanUp()
        }
    }

    /// curl's socket callback: start, change or stop watching `socket`.
    private func watch(_ socket: Int32, _ what: Int32) {
        if what == CURL_POLL_REMOVE {
            if watched.remove(socket) != nil { epoll_ctl(epoll, EPOLL_CTL_DEL, socket, nil) }
            return
        }
        var event = epoll_event()
        event.events = (what & CURL_POLL_IN != 0 ? EPOLLIN.rawValue : 0) | (what & CURL_POLL_OUT != 0 ? EPOLLOUT.rawValue : 0)
        event.data.fd = socket
        if watched.insert(socket).inserted {
            epoll_ctl(epoll, EPOLL_CTL_ADD, socket, &event)
        } else {
            epoll_ctl(epoll, EPOLL_CTL_MOD, socket, &event)
        }
    }

    private func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        var stillRunning: Int32 = 0
        while true {
            for transfer in incoming.withLock({ queue -> [Transfer] in defer { queue.removeAll() }; return queue }) {
                // Adding sets a timer due at once: the transfer starts at the timeout action below.
                if curl_multi_add_handle(multi, transfer.handle) == CURLM_OK {
                    active[transfer.handle] = transfer
                } else {
                    complete(transfer, code: CURLE_FAILED_INIT)
                }
            }
            if active.isEmpty && stopping.load(ordering: .acquiring) && incoming.withLock({ $0.isEmpty }) { break }
            var waitMS: Int32 = -1
            if let deadline = timerDeadline {
                waitMS = Int32(clamping: max(0, (deadline.nanoseconds - Deadline.now().nanoseconds + 999_999) / 1_000_000))
            }
            let ready = epoll_wait(epoll, &events, Int32(events.count), waitMS)
            for event in events.prefix(Int(max(0, ready))) {
                let fd = event.data.fd
                if fd == wake {
                    var count: eventfd_t = 0
                    eventfd_read(wake, &count)
                    continue
                }
                var flags: Int32 = 0
                if event.events & EPOLLIN.rawValue != 0 { flags |= CURL_CSELECT_IN }
                if event.events & EPOLLOUT.rawValue != 0 { flags |= CURL_CSELECT_OUT }
                if event.events & (EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 { flags |= CURL_CSELECT_ERR }
                curl_multi_socket_action(multi, fd, flags, &stillRunning)
            }
            if let deadline = timerDeadline, deadline.hasPassed {
                timerDeadline = nil
                curl_multi_socket_action(multi, crm_curl_socket_timeout, 0, &stillRunning)
            }
            finishDone()
        }
        cleanUp()
    }

    /// Completes every transfer curl reports done.
    private func finishDone() {
        var queued: Int32 = 0
        while let message = curl_multi_info_read(multi, &queued) {
            guard message.pointee.msg == CURLMSG_DONE, let handle = message.pointee.easy_handle else { continue }
            let code = message.pointee.data.result
            curl_multi_remove_handle(multi, handle)
            if let transfer = active.removeValue(forKey: handle) { complete(transfer, code: code) }
        }
    }

    private func complete(_ transfer: Transfer, code: CURLcode) {
        let result = transfer.result(code)
        // Only a handle whose transfer succeeded is kept. With libcurl 7.88, after a transfer
        // that failed (a name that does not resolve, a malformed URL), `curl_easy_reset` and
        // our 1 KiB CURLOPT_BUFFERSIZE, the handle's next answer is written past the end of its
        // 1 KiB receive buffer (found by `make fuzz`; a C program under AddressSanitizer shows
        // it without this code). Only this thread adds handles, so the count cannot grow
        // between the check and the append.
        if code == CURLE_OK, idleHandles.withLock({ $0.count }) < Self.maxIdleHandles {
            curl_easy_reset(transfer.handle)
            idleHandles.withLock { $0.append(transfer.handle) }
        } else {
            curl_easy_cleanup(transfer.handle)
        }
        running.subtract(1, ordering: .relaxed)
        transfer.completion?(result)
        transfer.completion = nil
    }

    private func cleanUp() {
        for handle in idleHandles.withLock({ $0 }) { curl_easy_cleanup(handle) }
        curl_multi_cleanup(multi)
        close(epoll)
        close(wake)
    }
}
