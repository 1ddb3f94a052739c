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
    VigilSCP() : assoc_(NULL), session_(NULL), pending_(VG_ASSOC_ACCEPT) {}

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
            if (reason == DCMSCP_NO_PRESENTATION_CONTEXTS && g_cb->refused)
                g_cb->refused(g_cb->ctx, calling_.c_str(), peer_.c_str(),
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
        OFCondition c = receiveSTORERequest(req, pres, OFString(tmp));
        if (c.bad()) {
            unlink(tmp);
            g_cb->receive_failed(g_cb->ctx, session_, c.text());
            return c;
        }
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
    OFString calling_, called_, peer_;
};

typedef DcmSCPPool<VigilSCP> Pool;

} // namespace

struct vg_scp {
    Pool pool;
    pthread_t thread;
    int port;
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

/* 1 when something listens on PORT (our bind fails with EADDRINUSE). */
static int port_taken(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    int taken = bind(fd, reinterpret_cast<struct sockaddr *>(&sa), sizeof sa) < 0 &&
                errno == EADDRINUSE;
    close(fd);
    return taken;
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
    /* A 1 s accept timeout lets the listener notice a stop request. */
    cfg.setConnectionBlockingMode(DUL_NOBLOCK);
    cfg.setConnectionTimeout(1);
    cfg.setACSETimeout(static_cast<Uint32>(opt->acse_timeout));
    cfg.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
    cfg.setDIMSETimeout(static_cast<Uint32>(opt->dimse_timeout));
    cfg.setHostLookupEnabled(OFFalse);
}

extern "C" int vg_scp_start(const vg_scp_options_t *opt, const vg_scp_callbacks_t *cb,
                            void (*stopped)(void *), void *arg, vg_scp_t **out,
                            char *err, size_t errlen)
{
    *out = NULL;
    try {
        if (g_cb) {
            snprintf(err, errlen, "a DICOM listener is already running");
            return VG_EBUSY;
        }
        /* Debian's DCMTK leaves Nagle's algorithm on unless asked. */
        setenv("TCP_NODELAY", "1", 1);
        dcmDisableGethostbyaddr.set(OFTrue);
        OFLog::configure(opt->verbose ? OFLogger::INFO_LOG_LEVEL
                                      : OFLogger::WARN_LOG_LEVEL);
        if (!dcmDataDict.isDictionaryLoaded()) {
            snprintf(err, errlen, "DICOM data dictionary not loaded (DCMDICTPATH?)");
            return VG_EDCM;
        }
        if (port_taken(opt->port)) {
            snprintf(err, errlen, "DICOM port %d is already in use", opt->port);
            return -EADDRINUSE;
        }
        vg_scp *scp = new vg_scp();
        scp->port = opt->port;
        scp->done = 0;
        scp->stopped = stopped;
        scp->stopped_arg = arg;
        pthread_mutex_init(&scp->lock, NULL);
        pthread_cond_init(&scp->cond, NULL);
        configure(scp->pool.getConfig(), opt);
        scp->pool.setMaxThreads(static_cast<Uint16>(opt->max_associations));
        g_cb = cb;
        g_tmp_dir = opt->tmp_dir;
        if (pthread_create(&scp->thread, NULL, pool_main, scp) != 0) {
            snprintf(err, errlen, "cannot start the DICOM listener thread");
            g_cb = NULL;
            delete scp;
            return VG_EDCM;
        }
        for (int i = 0; i < 500 && !scp->done; i++) {
            if (port_taken(opt->port)) {
                *out = scp;
                return 0;
            }
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        pthread_join(scp->thread, NULL);
        snprintf(err, errlen, "DICOM listener on port %d did not start: %s", opt->port,
                 scp->result.bad() ? scp->result.text() : "timed out");
        g_cb = NULL;
        delete scp;
        return VG_EDCM;
    } catch (...) {
        snprintf(err, errlen, "unexpected DCMTK exception while starting");
        return VG_EDCM;
    }
}

extern "C" void vg_scp_stop(vg_scp_t *scp)
{
    try {
        if (scp)
            scp->pool.stopAfterCurrentAssociations();
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
        delete scp;
    } catch (...) {
    }
    g_cb = NULL;
    return 0;
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
        /* Values longer than 1 KiB (pixel data) stay on disk. */
        OFCondition c = ff.loadFile(path, EXS_Unknown, EGL_noChange, 1024, ERM_autoDetect);
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
