/* DCMTK shim: the storage SCP pool and the header reader behind
 * dcm_shim.h. Every exported function catches all exceptions. Datasets are
 * received straight into a temp file in bit-preserving mode (no parse, no
 * re-encoding); what to do with them is the callbacks' decision. */
#include "server/dcm_shim.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/dcmnet/scppool.h>
#include <dcmtk/dcmnet/scpthrd.h>
#include <dcmtk/oflog/oflog.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "server/error.h"

namespace {

/* One pool per process: the workers are built by DCMTK with a default
 * constructor, so they find the callbacks here. */
const vg_scp_callbacks_t *g_cb;
const char *g_tmp_dir;
std::atomic<unsigned long> g_tmp_seq(0);

const char *const storage_classes[] = {
    UID_CTImageStorage,
    UID_EnhancedCTImageStorage,
    UID_LegacyConvertedEnhancedCTImageStorage,
    UID_DigitalMammographyXRayImageStorageForPresentation,
    UID_DigitalMammographyXRayImageStorageForProcessing,
    UID_BreastTomosynthesisImageStorage,
    UID_UltrasoundImageStorage,
    UID_UltrasoundMultiframeImageStorage,
    UID_SecondaryCaptureImageStorage,
    UID_MultiframeSingleBitSecondaryCaptureImageStorage,
    UID_MultiframeGrayscaleByteSecondaryCaptureImageStorage,
    UID_MultiframeGrayscaleWordSecondaryCaptureImageStorage,
    UID_MultiframeTrueColorSecondaryCaptureImageStorage,
    UID_BasicTextSRStorage,
    UID_EnhancedSRStorage,
    UID_ComprehensiveSRStorage,
    UID_Comprehensive3DSRStorage,
    UID_KeyObjectSelectionDocumentStorage,
    UID_SegmentationStorage,
};

/* Our order of preference when a context proposes several: the
 * uncompressed ones first, so a sender never has to compress for us. */
const char *const transfer_syntaxes[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEGProcess14TransferSyntax,
    UID_JPEGProcess1TransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,
    UID_JPEGLSLosslessTransferSyntax,
    UID_JPEGLSLossyTransferSyntax,
    UID_RLELosslessTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
};

class VigilSCP : public DcmThreadSCP {
  public:
    VigilSCP() : assoc_(NULL), session_(NULL), pending_(VG_ASSOC_ACCEPT), receiving_(NULL) {}

    /* The association is captured here because DcmSCP keeps its own
     * pointer private and a rejection with our own reason needs it. */
    virtual OFCondition run(T_ASC_Association *incoming)
    {
        assoc_ = incoming;
        pending_ = VG_ASSOC_ACCEPT;
        session_ = NULL;
        OFCondition c = DcmThreadSCP::run(incoming);
        if (session_)
            g_cb->end(g_cb->ctx, session_);
        session_ = NULL;
        assoc_ = NULL;
        return c;
    }

  protected:
    virtual void notifyAssociationRequest(const T_ASC_Parameters &params,
                                          DcmSCPActionType &action)
    {
        calling_ = params.DULparams.callingAPTitle;
        called_ = params.DULparams.calledAPTitle;
        peer_ = params.DULparams.callingPresentationAddress;
        pending_ = g_cb->check(g_cb->ctx, calling_.c_str(), called_.c_str(),
                               peer_.c_str());
        if (pending_ != VG_ASSOC_ACCEPT)
            action = DCMSCP_ACTION_REFUSE_ASSOCIATION;
    }

    virtual void refuseAssociation(const DcmRefuseReasonType reason)
    {
        if (pending_ == VG_ASSOC_ACCEPT || !assoc_) {
            if (reason == DCMSCP_NO_PRESENTATION_CONTEXTS)
                g_cb->refused(g_cb->ctx, VG_REFUSED_NO_CONTEXT, calling_.c_str(), called_.c_str(),
                              peer_.c_str(),
                              "no acceptable presentation context");
            DcmThreadSCP::refuseAssociation(reason);
            return;
        }
        T_ASC_RejectParameters rej;
        if (pending_ == VG_ASSOC_REJECT_CONGESTION) {
            rej.result = ASC_RESULT_REJECTEDTRANSIENT;
            rej.source = ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED;
            rej.reason = ASC_REASON_SP_PRES_TEMPORARYCONGESTION;
        } else {
            rej.result = ASC_RESULT_REJECTEDPERMANENT;
            rej.source = ASC_SOURCE_SERVICEUSER;
            rej.reason = pending_ == VG_ASSOC_REJECT_CALLED_AE
                             ? ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED
                             : ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED;
        }
        ASC_rejectAssociation(assoc_, &rej);
    }

    /* AE titles were decided in notifyAssociationRequest. */
    virtual OFBool checkCalledAETitleAccepted(const OFString &)
    {
        return OFTrue;
    }

    virtual void notifyAssociationAcknowledge()
    {
        session_ = g_cb->begin(g_cb->ctx, calling_.c_str(), peer_.c_str());
    }

    /* While a dataset streams into its temp file, the policy side may
     * start flushing it, so the fsync before the answer waits only for
     * the tail. */
    virtual void notifyRECEIVEProgress(const unsigned long)
    {
        if (receiving_)
            g_cb->progress(g_cb->ctx, session_, receiving_);
    }

    virtual OFCondition handleIncomingCommand(T_DIMSE_Message *msg,
                                              const DcmPresentationContextInfo &info)
    {
        if (msg->CommandField == DIMSE_C_STORE_RQ)
            return handleStore(msg->msg.CStoreRQ, info.presentationContextID);
        if (msg->CommandField == DIMSE_C_ECHO_RQ && g_cb->echo)
            g_cb->echo(g_cb->ctx);
        return DcmThreadSCP::handleIncomingCommand(msg, info);
    }

  private:
    OFCondition handleStore(T_DIMSE_C_StoreRQ &req, T_ASC_PresentationContextID pres)
    {
        char comment[128] = "";
        Uint16 status = 0xA700;
        if (!session_) {
            snprintf(comment, sizeof comment, "node cannot store now");
        } else {
            status = OFstatic_cast(Uint16, g_cb->admit(g_cb->ctx, session_, comment,
                                                       sizeof comment));
        }
        if (status != 0) {
            /* The dataset still has to be read off the wire. */
            DcmDataset *discard = NULL;
            OFCondition c = receiveSTORERequest(req, pres, discard);
            delete discard;
            if (c.bad())
                return c;
            return respond(pres, req, status, comment);
        }
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s/%ld-%lu.part", g_tmp_dir, (long)getpid(),
                 g_tmp_seq.fetch_add(1));
        receiving_ = tmp;
        OFCondition c = receiveSTORERequest(req, pres, OFString(tmp));
        receiving_ = NULL;
        if (c.bad()) {
            unlink(tmp);
            g_cb->receive_failed(g_cb->ctx, session_, c.text());
            return c;
        }
        g_cb->received(g_cb->ctx, session_, tmp);
        vg_instance_meta_t meta;
        char perr[256] = "";
        int rc = vg_dcm_read_meta(tmp, &meta, perr, sizeof perr);
        status = OFstatic_cast(Uint16,
                               g_cb->store(g_cb->ctx, session_, tmp, rc == 0 ? &meta : NULL,
                                           perr, req.AffectedSOPInstanceUID, comment,
                                           sizeof comment));
        return respond(pres, req, status, comment);
    }

    OFCondition respond(T_ASC_PresentationContextID pres, const T_DIMSE_C_StoreRQ &req,
                        Uint16 status, const char *comment)
    {
        DcmDataset detail;
        DcmDataset *pdetail = NULL;
        if (status != 0 && comment[0]) {
            /* Error Comment is LO: at most 64 characters. */
            OFString text(comment);
            if (text.size() > 64)
                text = text.substr(0, 64);
            detail.putAndInsertOFStringArray(DCM_ErrorComment, text);
            pdetail = &detail;
        }
        return sendSTOREResponse(pres, req.MessageID, req.AffectedSOPClassUID,
                                 req.AffectedSOPInstanceUID, status, pdetail);
    }

    T_ASC_Association *assoc_;
    void *session_;
    vg_assoc_decision_t pending_;
    const char *receiving_;       /* temp file being received, or NULL */
    OFString calling_, called_, peer_;
};

/* The listener. DCMTK's own pool reads each A-ASSOCIATE-RQ in its single
 * listening thread, so one silent connection would hold up every other
 * sender for the ACSE timeout, and it binds every interface. This pool
 * owns its listening socket (bound to the configured address), keeps new
 * connections aside until their A-ASSOCIATE-RQ has fully arrived, and only
 * then lets DCMTK read it, which no longer blocks. */
class VigilPoolBase : public DcmBaseSCPPool {
  public:
    VigilPoolBase() : listen_fd_(-1), acse_timeout_(30), stop_(false)
    {
        wake_[0] = wake_[1] = -1;
    }

    /* DCMTK's workers delete themselves when their association ends, and
     * two things go wrong with that. Nobody joins their threads, so every
     * association would keep its thread's stack mapped (8 MiB of address
     * space and two mappings): a node taking tens of thousands of
     * associations would run out of mappings and refuse every study. And
     * OFThread::start() stores the new thread's id into the worker after
     * pthread_create() returns, by which time a short association (a
     * rejected one) may have ended and the worker freed itself: a write
     * into freed memory. So a worker detaches its thread (the pool never
     * joins: listen() waits for the busy count) and waits at its start
     * until hand_over() has left runAssociation(). */
    class DetachedWorker : public DcmBaseSCPWorker {
      protected:
        explicit DetachedWorker(DcmBaseSCPPool &pool) : DcmBaseSCPWorker(pool) {}
        virtual void run()
        {
            pthread_detach(pthread_self());
            VigilPoolBase &pool = static_cast<VigilPoolBase &>(m_pool);
            pool.start_gate_.lock();
            pool.start_gate_.unlock();
            DcmBaseSCPWorker::run();
        }
    };

    int open_listener(const char *bind_addr, int port, char *err, size_t errlen);
    void request_stop();
    virtual OFCondition listen();
    void close_fds();

  private:
    struct Pending {
        int fd;
        time_t deadline;
        char peer[64];
    };
    void accept_new(std::vector<Pending> &pending);
    int pdu_ready(const Pending &p);
    void hand_over(T_ASC_Network *net, const Pending &p, const DcmSharedSCPConfig &shared);

  public:
    int listen_fd_;
    int wake_[2];
    int acse_timeout_;
    std::atomic<bool> stop_;
    std::mutex start_gate_; /* held while a worker is being started */
};

typedef DcmSCPPool<VigilSCP, VigilPoolBase, VigilPoolBase::DetachedWorker> Pool;

/* The most pending connections kept waiting for their first PDU. */
const size_t max_pending = 256;

int VigilPoolBase::open_listener(const char *bind_addr, int port, char *err, size_t errlen)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "DICOM bind address %s is not an IPv4 address", bind_addr);
        return -EINVAL;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, reinterpret_cast<struct sockaddr *>(&sa), sizeof sa) < 0 ||
        ::listen(fd, 128) < 0 || pipe2(wake_, O_CLOEXEC | O_NONBLOCK) < 0) {
        int e = errno;
        snprintf(err, errlen, "DICOM listener on %s:%d: %s", bind_addr, port, strerror(e));
        if (fd >= 0)
            close(fd);
        return -e;
    }
    listen_fd_ = fd;
    return 0;
}

void VigilPoolBase::request_stop()
{
    stop_ = true;
    if (wake_[1] >= 0 && write(wake_[1], "x", 1) < 0) {
        /* The pipe is full: the listener is awake anyway. */
    }
}

void VigilPoolBase::close_fds()
{
    for (int *fd : {&listen_fd_, &wake_[0], &wake_[1]})
        if (*fd >= 0) {
            close(*fd);
            *fd = -1;
        }
}

void VigilPoolBase::accept_new(std::vector<Pending> &pending)
{
    for (;;) {
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        int fd = accept4(listen_fd_, reinterpret_cast<struct sockaddr *>(&from), &len,
                         SOCK_CLOEXEC);
        if (fd < 0)
            return;
        Pending p;
        p.fd = fd;
        p.deadline = time(NULL) + acse_timeout_;
        inet_ntop(AF_INET, &from.sin_addr, p.peer, sizeof p.peer);
        if (pending.size() >= max_pending) {
            g_cb->refused(g_cb->ctx, VG_REFUSED_TOO_MANY, "", "", p.peer,
                          "too many connections waiting to associate");
            close(fd);
            continue;
        }
        /* Debian's DCMTK leaves Nagle's algorithm on; we never want it. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pending.push_back(p);
    }
}

/* 1 when P's whole A-ASSOCIATE-RQ PDU is buffered, 0 when more is to come,
 * -1 when the connection must go (closed, or not an association request). */
int VigilPoolBase::pdu_ready(const Pending &p)
{
    unsigned char h[6];
    ssize_t n = recv(p.fd, h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
        return -1;
    if (n < 0)
        return 0;
    if (h[0] != 0x01) {
        g_cb->refused(g_cb->ctx, VG_REFUSED_PROTOCOL, "", "", p.peer,
                      "first PDU is not an association request");
        return -1;
    }
    if (n < 6)
        return 0;
    uint32_t len = (uint32_t)h[2] << 24 | (uint32_t)h[3] << 16 | (uint32_t)h[4] << 8 | h[5];
    if (len > dcmAssociatePDUSizeLimit.get()) {
        g_cb->refused(g_cb->ctx, VG_REFUSED_PROTOCOL, "", "", p.peer,
                      "association request too large");
        return -1;
    }
    int avail = 0;
    if (ioctl(p.fd, FIONREAD, &avail) < 0)
        return -1;
    return (uint32_t)avail >= len + 6 ? 1 : 0;
}

void VigilPoolBase::hand_over(T_ASC_Network *net, const Pending &p,
                              const DcmSharedSCPConfig &shared)
{
    /* DCMTK takes an already connected socket through this global; only
     * this thread sets it, and the request is already buffered, so the
     * read below returns at once. */
    dcmExternalSocketHandle.set(p.fd);
    T_ASC_Association *assoc = NULL;
    OFCondition c = ASC_receiveAssociation(net, &assoc, getConfig().getMaxReceivePDULength(),
                                           NULL, NULL, OFFalse, DUL_NOBLOCK, acse_timeout_);
    dcmExternalSocketHandle.set(-1);
    if (c.bad()) {
        g_cb->refused(g_cb->ctx, VG_REFUSED_PROTOCOL, "", "", p.peer, c.text());
        if (assoc) {
            ASC_dropAssociation(assoc);
            ASC_destroyAssociation(&assoc);
        } else {
            close(p.fd);
        }
        return;
    }
    {
        std::lock_guard<std::mutex> started(start_gate_);
        c = runAssociation(assoc, shared);
    }
    if (c.bad()) {
        g_cb->refused(g_cb->ctx, VG_REFUSED_TOO_MANY, assoc->params->DULparams.callingAPTitle,
                      assoc->params->DULparams.calledAPTitle, p.peer, c == NET_EC_SCPBusy ? "max_associations reached" : c.text());
        rejectAssociation(assoc, c == NET_EC_SCPBusy ? ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED
                                                     : ASC_REASON_SP_PRES_TEMPORARYCONGESTION);
        dropAndDestroyAssociation(assoc);
    }
}

OFCondition VigilPoolBase::listen()
{
    DcmSharedSCPConfig shared(getConfig());
    T_ASC_Network *net = NULL;
    /* With an external socket set, DCMTK creates no listening socket of
     * its own. */
    dcmExternalSocketHandle.set(listen_fd_);
    OFCondition c = ASC_initializeNetwork(NET_ACCEPTOR, (int)getConfig().getPort(),
                                          acse_timeout_, &net);
    dcmExternalSocketHandle.set(-1);
    if (c.bad())
        return c;
    std::vector<Pending> pending;
    std::vector<struct pollfd> fds;
    while (!stop_) {
        fds.clear();
        fds.push_back({listen_fd_, POLLIN, 0});
        fds.push_back({wake_[0], POLLIN, 0});
        for (const Pending &p : pending)
            fds.push_back({p.fd, POLLIN, 0});
        if (poll(fds.data(), fds.size(), 1000) < 0 && errno != EINTR)
            break;
        time_t now = time(NULL);
        std::vector<Pending> waiting;
        for (size_t i = 0; i < pending.size(); i++) {
            int ready = fds[i + 2].revents ? pdu_ready(pending[i]) : 0;
            if (ready > 0) {
                hand_over(net, pending[i], shared);
            } else if (ready < 0 || now >= pending[i].deadline) {
                if (ready == 0)
                    g_cb->refused(g_cb->ctx, VG_REFUSED_PROTOCOL, "", "", pending[i].peer,
                                  "no association request within acse_timeout");
                close(pending[i].fd);
            } else {
                waiting.push_back(pending[i]);
            }
        }
        pending.swap(waiting);
        if (fds[0].revents)
            accept_new(pending);
    }
    for (const Pending &p : pending)
        close(p.fd);
    /* Running associations finish on their own threads, which free
     * themselves; the caller bounds how long it waits. */
    while (numThreads(OFTrue) > 0) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    ASC_dropNetwork(&net);
    return EC_Normal;
}

} // namespace

struct vg_scp {
    Pool pool;
    pthread_t thread;
    std::atomic<int> done;
    OFCondition result;
    void (*stopped)(void *);
    void *stopped_arg;
    pthread_mutex_t lock;
    pthread_cond_t cond;
};

static void *pool_main(void *arg)
{
    vg_scp *scp = static_cast<vg_scp *>(arg);
    try {
        scp->result = scp->pool.listen();
    } catch (...) {
        scp->result = EC_IllegalCall;
    }
    pthread_mutex_lock(&scp->lock);
    scp->done = 1;
    pthread_cond_broadcast(&scp->cond);
    pthread_mutex_unlock(&scp->lock);
    if (scp->stopped)
        scp->stopped(scp->stopped_arg);
    return NULL;
}

static void configure(DcmSCPConfig &cfg, const vg_scp_options_t *opt)
{
    OFList<OFString> ts;
    for (const char *t : transfer_syntaxes)
        ts.push_back(t);
    OFList<OFString> verification;
    verification.push_back(UID_LittleEndianExplicitTransferSyntax);
    verification.push_back(UID_LittleEndianImplicitTransferSyntax);
    cfg.addPresentationContext(UID_VerificationSOPClass, verification);
    for (const char *sop : storage_classes)
        cfg.addPresentationContext(sop, ts);
    cfg.setAETitle(opt->ae_title);
    cfg.setPort(static_cast<Uint16>(opt->port));
    cfg.setMaxReceivePDULength(ASC_MAXIMUMPDUSIZE);
    cfg.setACSETimeout(static_cast<Uint32>(opt->acse_timeout));
    cfg.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
    cfg.setDIMSETimeout(static_cast<Uint32>(opt->dimse_timeout));
    cfg.setHostLookupEnabled(OFFalse);
    cfg.setProgressNotificationMode(OFTrue);
}

extern "C" int vg_scp_start(const vg_scp_options_t *opt, const vg_scp_callbacks_t *cb,
                            void (*stopped)(void *), void *arg, vg_scp_t **out,
                            char *err, size_t errlen)
{
    *out = NULL;
    vg_scp *scp = NULL;
    try {
        if (g_cb) {
            snprintf(err, errlen, "a DICOM listener is already running");
            return VG_EBUSY;
        }
        /* Debian's DCMTK leaves Nagle's algorithm on unless asked. */
        setenv("TCP_NODELAY", "1", 1);
        vg_dcm_network_init();
        dcmDisableGethostbyaddr.set(OFTrue);
        OFLog::configure(opt->verbose ? OFLogger::INFO_LOG_LEVEL
                                      : OFLogger::WARN_LOG_LEVEL);
        /* Reading headers stops at Pixel Data on purpose; dcmdata would
         * warn about that for every instance. */
        if (!opt->verbose)
            OFLog::getLogger("dcmtk.dcmdata").setLogLevel(OFLogger::ERROR_LOG_LEVEL);
        if (!dcmDataDict.isDictionaryLoaded()) {
            snprintf(err, errlen, "DICOM data dictionary not loaded (DCMDICTPATH?)");
            return VG_EDCM;
        }
        scp = new vg_scp();
        scp->done = 0;
        scp->stopped = stopped;
        scp->stopped_arg = arg;
        pthread_mutex_init(&scp->lock, NULL);
        pthread_cond_init(&scp->cond, NULL);
        configure(scp->pool.getConfig(), opt);
        scp->pool.setMaxThreads(static_cast<Uint16>(opt->max_associations));
        scp->pool.acse_timeout_ = opt->acse_timeout;
        int rc = scp->pool.open_listener(opt->bind ? opt->bind : "0.0.0.0", opt->port, err,
                                         errlen);
        if (rc < 0) {
            delete scp;
            return rc;
        }
        g_cb = cb;
        g_tmp_dir = opt->tmp_dir;
        if (pthread_create(&scp->thread, NULL, pool_main, scp) != 0) {
            snprintf(err, errlen, "cannot start the DICOM listener thread");
            g_cb = NULL;
            scp->pool.close_fds();
            delete scp;
            return VG_EDCM;
        }
        *out = scp;
        return 0;
    } catch (...) {
        snprintf(err, errlen, "unexpected DCMTK exception while starting");
        delete scp;
        return VG_EDCM;
    }
}

extern "C" void vg_scp_stop(vg_scp_t *scp)
{
    try {
        if (scp)
            scp->pool.request_stop();
    } catch (...) {
    }
}

extern "C" int vg_scp_join(vg_scp_t *scp, int timeout_ms)
{
    if (!scp)
        return 0;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&scp->lock);
    while (!scp->done)
        if (pthread_cond_timedwait(&scp->cond, &scp->lock, &deadline) == ETIMEDOUT)
            break;
    int done = scp->done;
    pthread_mutex_unlock(&scp->lock);
    if (!done)
        return VG_EBUSY;
    pthread_join(scp->thread, NULL);
    try {
        scp->pool.close_fds();
        delete scp;
    } catch (...) {
    }
    g_cb = NULL;
    return 0;
}

extern "C" void vg_dcm_network_init(void)
{
    try {
        static std::once_flag once;
        std::call_once(once, []() {
            T_ASC_Network *net = NULL;
            if (ASC_initializeNetwork(NET_REQUESTOR, 0, 1, &net).good())
                ASC_dropNetwork(&net);
        });
    } catch (...) {
        /* Then the first network set up does it, as DCMTK would. */
    }
}

static void get_str(DcmItem *item, const DcmTagKey &tag, char *dst, size_t len)
{
    OFString v;
    dst[0] = '\0';
    if (item->findAndGetOFStringArray(tag, v).good()) {
        /* Trim the padding DICOM allows at both ends of a value. */
        size_t b = v.find_first_not_of(" \0", 0, 2);
        size_t e = v.find_last_not_of(" \0", OFString_npos, 2);
        if (b != OFString_npos)
            snprintf(dst, len, "%s", v.substr(b, e - b + 1).c_str());
    }
}

static int get_int(DcmItem *item, const DcmTagKey &tag, int dflt)
{
    Sint32 v;
    if (item->findAndGetSint32(tag, v).good())
        return static_cast<int>(v);
    OFString s;
    if (item->findAndGetOFString(tag, s).good() && !s.empty())
        return atoi(s.c_str());
    return dflt;
}

static void read_geometry(DcmItem *ds, vg_instance_meta_t *m)
{
    Float64 v;
    int pos = 0, ori = 0;
    for (unsigned long i = 0; i < 3; i++)
        if (ds->findAndGetFloat64(DCM_ImagePositionPatient, v, i).good())
            m->image_position[pos++] = v;
    for (unsigned long i = 0; i < 6; i++)
        if (ds->findAndGetFloat64(DCM_ImageOrientationPatient, v, i).good())
            m->image_orientation[ori++] = v;
    m->has_position = pos == 3 && ori == 6;
    if (ds->findAndGetFloat64(DCM_SliceThickness, v).good())
        m->slice_thickness = v;
    Uint16 u;
    if (ds->findAndGetUint16(DCM_Rows, u).good())
        m->rows = u;
    if (ds->findAndGetUint16(DCM_Columns, u).good())
        m->columns = u;
}

extern "C" int vg_dcm_read_meta(const char *path, vg_instance_meta_t *m, char *err,
                                size_t errlen)
{
    memset(m, 0, sizeof *m);
    m->series_number = m->instance_number = -1;
    m->frames = 1;
    try {
        DcmFileFormat ff;
        /* Parsing stops at Pixel Data: the header is all the index needs,
         * and scanning past half a megabyte per slice costs more than the
         * rest of the header together. */
        OFCondition c = ff.loadFileUntilTag(path, EXS_Unknown, EGL_noChange, 1024,
                                            ERM_autoDetect, DCM_PixelData);
        if (c.bad()) {
            snprintf(err, errlen, "%s", c.text());
            return VG_EPARSE;
        }
        DcmDataset *ds = ff.getDataset();
        DcmMetaInfo *meta = ff.getMetaInfo();
        get_str(meta, DCM_TransferSyntaxUID, m->transfer_syntax, sizeof m->transfer_syntax);
        get_str(ds, DCM_SOPClassUID, m->sop_class_uid, sizeof m->sop_class_uid);
        get_str(ds, DCM_SOPInstanceUID, m->sop_instance_uid, sizeof m->sop_instance_uid);
        get_str(ds, DCM_StudyInstanceUID, m->study_uid, sizeof m->study_uid);
        get_str(ds, DCM_SeriesInstanceUID, m->series_uid, sizeof m->series_uid);
        get_str(ds, DCM_PatientID, m->patient_id, sizeof m->patient_id);
        get_str(ds, DCM_AccessionNumber, m->accession, sizeof m->accession);
        get_str(ds, DCM_StudyDate, m->study_date, sizeof m->study_date);
        get_str(ds, DCM_StudyTime, m->study_time, sizeof m->study_time);
        get_str(ds, DCM_StudyDescription, m->study_description, sizeof m->study_description);
        get_str(ds, DCM_Modality, m->modality, sizeof m->modality);
        get_str(ds, DCM_BodyPartExamined, m->body_part, sizeof m->body_part);
        get_str(ds, DCM_SeriesDescription, m->series_description,
                sizeof m->series_description);
        get_str(ds, DCM_ImageType, m->image_type, sizeof m->image_type);
        m->series_number = get_int(ds, DCM_SeriesNumber, -1);
        m->instance_number = get_int(ds, DCM_InstanceNumber, -1);
        m->frames = get_int(ds, DCM_NumberOfFrames, 1);
        read_geometry(ds, m);
        return 0;
    } catch (...) {
        snprintf(err, errlen, "unexpected exception while reading");
        return VG_EPARSE;
    }
}
