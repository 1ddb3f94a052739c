/* DCMTK shim: the storage SCU behind scu.h, on DCMTK's association API
 * (assoc.h, dimse.h) rather than DcmSCU, because an administrator needs
 * the reason of a rejection and the status of each C-STORE, which DcmSCU
 * only logs. One presentation context per (SOP class, transfer syntax of
 * the files), proposing the file's own transfer syntax, then explicit and
 * implicit VR little endian. A file goes out in its own transfer syntax
 * when that is accepted (DCMTK writes the data set it read: the same bytes
 * for files with explicit-length sequences, as DCMTK writes them), else
 * converted (decompressed if needed). Every exported function catches all
 * exceptions. */
#include "server/scu.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dimse.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/dcmtls/tlslayer.h>
#include <dcmtk/oflog/oflog.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>
#include <string>
#include <vector>

#include "server/dcm_shim.h"
#include "server/error.h"

namespace
{

/* What the meta header says about one item's file. */
struct FileMeta {
    std::string sop_class, sop_uid, xfer;
    int pcid = 0; /* 0: no context (none fitted) */
};

/* One presentation context we propose. */
struct Context {
    std::string sop_class, xfer; /* xfer: the files' own */
    int pcid;
};

void fmt(char *dst, size_t len, const char *f, ...) __attribute__((format(printf, 3, 4)));

void fmt(char *dst, size_t len, const char *f, ...)
{
    if (!dst || !len)
        return;
    va_list ap;
    va_start(ap, f);
    vsnprintf(dst, len, f, ap);
    va_end(ap);
}

const char *uid_name(const std::string &uid)
{
    return dcmFindNameOfUID(uid.c_str(), uid.c_str());
}

/* Reads the meta header of ITEM's file into M; 0, or -1 with the item
 * FAILED. */
int read_meta(vg_scu_item_t *item, FileMeta &m)
{
    DcmFileFormat ff;
    OFCondition c =
        ff.loadFile(item->path, EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_metaOnly);
    OFString cls, uid, xfer;
    DcmMetaInfo *meta = ff.getMetaInfo();
    if (c.good() && meta) {
        meta->findAndGetOFString(DCM_MediaStorageSOPClassUID, cls);
        meta->findAndGetOFString(DCM_MediaStorageSOPInstanceUID, uid);
        meta->findAndGetOFString(DCM_TransferSyntaxUID, xfer);
    }
    if (c.bad() || cls.empty() || uid.empty() || xfer.empty()) {
        item->outcome = VG_SCU_FAILED;
        fmt(item->error, sizeof item->error, "cannot read %s as a DICOM file: %s",
            item->path, c.bad() ? c.text() : "no file meta information");
        return -1;
    }
    if (item->sop_uid && uid != item->sop_uid) {
        item->outcome = VG_SCU_FAILED;
        fmt(item->error, sizeof item->error, "%s holds SOP Instance UID %s, not %s",
            item->path, uid.c_str(), item->sop_uid);
        return -1;
    }
    m.sop_class = cls.c_str();
    m.sop_uid = uid.c_str();
    m.xfer = xfer.c_str();
    return 0;
}

/* Proposes one context per (SOP class, transfer syntax) of the readable
 * files, at most 128 (the most one association carries); files past that
 * keep pcid 0 and are left NOT_SENT for the next association. */
OFCondition add_contexts(T_ASC_Parameters *params, std::vector<FileMeta> &metas,
                         const std::vector<bool> &readable)
{
    std::vector<Context> ctx;
    for (size_t i = 0; i < metas.size(); i++) {
        if (!readable[i])
            continue;
        FileMeta &m = metas[i];
        for (const Context &c : ctx)
            if (c.sop_class == m.sop_class && c.xfer == m.xfer)
                m.pcid = c.pcid;
        if (m.pcid || ctx.size() >= 128)
            continue;
        Context c{m.sop_class, m.xfer, 1 + 2 * static_cast<int>(ctx.size())};
        const char *ts[3];
        int n = 0;
        ts[n++] = m.xfer.c_str();
        if (m.xfer != UID_LittleEndianExplicitTransferSyntax)
            ts[n++] = UID_LittleEndianExplicitTransferSyntax;
        if (m.xfer != UID_LittleEndianImplicitTransferSyntax)
            ts[n++] = UID_LittleEndianImplicitTransferSyntax;
        OFCondition cond = ASC_addPresentationContext(
            params, static_cast<T_ASC_PresentationContextID>(c.pcid), m.sop_class.c_str(),
            ts, n);
        if (cond.bad())
            return cond;
        m.pcid = c.pcid;
        ctx.push_back(c);
    }
    return EC_Normal;
}

/* The rejection in words, from the A-ASSOCIATE-RJ's source and reason. */
void describe_reject(T_ASC_Parameters *params, const vg_scu_peer_t *p, char *err,
                     size_t len)
{
    T_ASC_RejectParameters rej;
    ASC_getRejectParameters(params, &rej);
    const char *why;
    switch (rej.reason) {
    case ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED:
        fmt(err, len,
            "association rejected by %s:%d: called AE title \"%s\" not recognised "
            "(the destination knows itself by another AE title)",
            p->host, p->port, p->called_ae);
        return;
    case ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED:
        fmt(err, len,
            "association rejected by %s:%d: calling AE title \"%s\" not recognised "
            "(this node is not configured as a sender on the destination)",
            p->host, p->port, p->calling_ae);
        return;
    case ASC_REASON_SU_APPCONTEXTNAMENOTSUPPORTED:
        why = "application context not supported";
        break;
    case ASC_REASON_SP_ACSE_PROTOCOLVERSIONNOTSUPPORTED:
        why = "protocol version not supported";
        break;
    case ASC_REASON_SP_PRES_TEMPORARYCONGESTION: why = "temporary congestion"; break;
    case ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED:
        why = "local limit exceeded (too many associations)";
        break;
    default: why = "no reason given"; break;
    }
    fmt(err, len, "association rejected by %s:%d (%s): %s", p->host, p->port,
        rej.result == ASC_RESULT_REJECTEDTRANSIENT ? "transient" : "permanent", why);
}

/* COND and the conditions under it as one line, without DCMTK's
 * "module:code" prefixes. */
std::string cond_text(OFCondition cond)
{
    OFString full;
    DimseCondition::dump(full, cond);
    std::string out;
    const char *s = full.c_str();
    while (*s) {
        size_t n = strcspn(s, "\n");
        std::string line(s, n);
        unsigned a, b;
        int skip = 0;
        if (sscanf(line.c_str(), "%4x:%4x %n", &a, &b, &skip) == 2 && skip > 0)
            line = line.substr(static_cast<size_t>(skip));
        if (!line.empty())
            out += (out.empty() ? "" : ": ") + line;
        s += n + (s[n] ? 1 : 0);
    }
    return out;
}

/* Why ASC_requestAssociation failed, and the code for it. */
int describe_connect_failure(OFCondition cond, T_ASC_Parameters *params,
                             const vg_scu_peer_t *p, char *err, size_t len)
{
    if (cond == DUL_ASSOCIATIONREJECTED) {
        describe_reject(params, p, err, len);
        return VG_EDCM;
    }
    std::string all = cond_text(cond);
    if (cond.module() == OFM_dcmtls || cond.code() == DULC_TLSERROR) {
        std::string why = all;
        for (const char *pre : {"DUL secure transport layer: ", "TLS error: "})
            if (why.compare(0, strlen(pre), pre) == 0)
                why = why.substr(strlen(pre));
        fmt(err, len, "TLS handshake with %s:%d failed: %s", p->host, p->port, why.c_str());
        return VG_EDCM;
    }
    if (all.find("Connection refused") != std::string::npos) {
        fmt(err, len,
            "connection refused %s:%d (nothing listening there: is the "
            "destination running, and is the port right?)",
            p->host, p->port);
        return -ECONNREFUSED;
    }
    if (all.find("timed out") != std::string::npos ||
        all.find("Timeout") != std::string::npos ||
        all.find("timeout") != std::string::npos) {
        fmt(err, len,
            "no answer from %s:%d within %d s (host down, or a firewall "
            "dropping the connection?)",
            p->host, p->port, p->acse_timeout);
        return -ETIMEDOUT;
    }
    if (all.find("unknown host") != std::string::npos ||
        all.find("Name or service") != std::string::npos) {
        fmt(err, len, "cannot resolve host name \"%s\"", p->host);
        return -EHOSTUNREACH;
    }
    if (cond == DUL_PEERABORTEDASSOCIATION ||
        all.find("Peer aborted") != std::string::npos) {
        fmt(err, len, "%s:%d closed the connection during association (%s)%s", p->host,
            p->port, all.c_str(), p->tls ? "" : "; does the destination expect TLS?");
        return VG_EDCM;
    }
    if (all.find("Unrecognized PDU") != std::string::npos ||
        all.find("Illegal PDU") != std::string::npos) {
        fmt(err, len,
            "%s:%d answered, but not in DICOM (%s): is that the destination's "
            "DICOM port?",
            p->host, p->port, all.c_str());
        return VG_EDCM;
    }
    fmt(err, len, "cannot associate with %s:%d: %s", p->host, p->port, all.c_str());
    return VG_EDCM;
}

/* Sets up TLS on NET and PARAMS; the caller deletes *out after the
 * network is dropped. 0, or VG_EDCM with err filled. */
int setup_tls(const vg_scu_peer_t *p, T_ASC_Network *net, T_ASC_Parameters *params,
              DcmTLSTransportLayer **out, char *err, size_t len)
{
    DcmTLSTransportLayer *tls = new DcmTLSTransportLayer(NET_REQUESTOR, NULL, OFTrue);
    *out = tls;
    if (!*tls) {
        fmt(err, len, "TLS: cannot initialise OpenSSL");
        return VG_EDCM;
    }
    OFCondition c = tls->setTLSProfile(TSP_Profile_BCP195_ND);
    if (c.good())
        c = tls->activateCipherSuites();
    if (c.bad()) {
        fmt(err, len, "TLS: cannot set the BCP 195 profile: %s", c.text());
        return VG_EDCM;
    }
    if (!p->tls_ca_file || !*p->tls_ca_file) {
        fmt(err, len,
            "TLS: no CA certificate to verify the destination with (tls_ca_file)");
        return VG_EDCM;
    }
    c = tls->addTrustedCertificateFile(p->tls_ca_file, DCF_Filetype_PEM);
    if (c.bad()) {
        fmt(err, len, "TLS: cannot load CA certificate file %s: %s", p->tls_ca_file,
            c.text());
        return VG_EDCM;
    }
    if (p->tls_certificate && *p->tls_certificate) {
        tls->setPrivateKeyPasswd(""); /* never ask on a console */
        c = tls->setPrivateKeyFile(p->tls_private_key, DCF_Filetype_PEM);
        if (c.good())
            c = tls->setCertificateFile(p->tls_certificate, DCF_Filetype_PEM);
        if (c.bad()) {
            fmt(err, len, "TLS: cannot load this node's certificate %s or key %s: %s",
                p->tls_certificate, p->tls_private_key, c.text());
            return VG_EDCM;
        }
        if (!tls->checkPrivateKeyMatchesCertificate()) {
            fmt(err, len, "TLS: private key %s does not match certificate %s",
                p->tls_private_key, p->tls_certificate);
            return VG_EDCM;
        }
    }
    tls->setCertificateVerification(DCV_requireCertificate);
    c = ASC_setTransportLayer(net, tls, 0);
    if (c.good())
        c = ASC_setTransportLayerType(params, OFTrue);
    if (c.bad()) {
        fmt(err, len, "TLS: %s", c.text());
        return VG_EDCM;
    }
    return 0;
}

/* A DIMSE status that is not success, in words. */
const char *status_words(unsigned s)
{
    if ((s & 0xff00) == 0xa700)
        return "out of resources";
    if ((s & 0xff00) == 0xa900)
        return "data set does not match SOP class";
    if ((s & 0xf000) == 0xc000)
        return "cannot understand";
    switch (s) {
    case 0x0122: return "SOP class not supported";
    case 0x0124: return "not authorized";
    case 0x0110: return "processing failure";
    case 0x0111: return "duplicate SOP instance";
    case 0x0117: return "invalid SOP instance";
    case 0x0210: return "duplicate invocation";
    case 0x0211: return "unrecognized operation";
    case 0x0212: return "mistyped argument";
    case 0xb000: return "coercion of data elements";
    case 0xb006: return "elements discarded";
    case 0xb007: return "data set does not match SOP class";
    default: return "failure";
    }
}

/* Records the C-STORE response RSP of ITEM. Warnings B000, B006 and B007
 * mean the destination stored the object (PS3.4 B.2.3): acknowledged,
 * with the warning kept in item->error. */
void record_status(vg_scu_item_t *item, const T_DIMSE_C_StoreRSP &rsp, DcmDataset *detail)
{
    unsigned s = rsp.DimseStatus;
    item->status = static_cast<int>(s);
    OFString comment;
    if (detail)
        detail->findAndGetOFString(DCM_ErrorComment, comment);
    const char *sep = comment.empty() ? "" : ": ";
    if (s == STATUS_Success) {
        item->outcome = VG_SCU_ACKED;
        item->error[0] = '\0';
    } else if (s == 0xb000 || s == 0xb006 || s == 0xb007) {
        item->outcome = VG_SCU_ACKED;
        fmt(item->error, sizeof item->error, "stored with warning 0x%04X %s%s%s", s,
            status_words(s), sep, comment.c_str());
    } else {
        item->outcome = VG_SCU_FAILED;
        fmt(item->error, sizeof item->error, "status 0x%04X %s%s%s", s, status_words(s),
            sep, comment.c_str());
    }
}

/* The transfer syntax the peer accepted on context PCID, or "" if it
 * refused the context. */
std::string accepted_xfer(T_ASC_Parameters *params, int pcid)
{
    T_ASC_PresentationContext pc;
    if (ASC_findAcceptedPresentationContext(
            params, static_cast<T_ASC_PresentationContextID>(pcid), &pc)
            .bad() ||
        pc.resultReason != ASC_P_ACCEPTANCE)
        return "";
    return pc.acceptedTransferSyntax;
}

/* Sends one file on the association. Returns 0, or -1 when the
 * association is no longer usable (the item is FAILED). */
int send_one(T_ASC_Association *assoc, const vg_scu_peer_t *p, vg_scu_item_t *item,
             const FileMeta &m)
{
    std::string ts = accepted_xfer(assoc->params, m.pcid);
    if (ts.empty()) {
        item->outcome = VG_SCU_FAILED;
        fmt(item->error, sizeof item->error,
            "destination does not accept %s (in %s or "
            "uncompressed)",
            uid_name(m.sop_class), uid_name(m.xfer));
        return 0;
    }
    DcmFileFormat ff;
    OFCondition c = ff.loadFile(item->path);
    DcmDataset *ds = ff.getDataset();
    if (c.good() && ts != m.xfer) {
        E_TransferSyntax want = DcmXfer(ts.c_str()).getXfer();
        c = ds->chooseRepresentation(want, NULL);
        if (c.good() && !ds->canWriteXfer(want))
            c = EC_CannotChangeRepresentation;
        if (c.bad()) {
            item->outcome = VG_SCU_FAILED;
            fmt(item->error, sizeof item->error,
                "cannot convert %s from %s to %s, the only "
                "transfer syntax the destination accepts: %s",
                item->path, uid_name(m.xfer), uid_name(ts), c.text());
            return 0;
        }
    } else if (c.bad()) {
        item->outcome = VG_SCU_FAILED;
        fmt(item->error, sizeof item->error, "cannot read %s: %s", item->path, c.text());
        return 0;
    }
    T_DIMSE_C_StoreRQ req;
    memset(&req, 0, sizeof req);
    req.MessageID = assoc->nextMsgID++;
    OFStandard::strlcpy(req.AffectedSOPClassUID, m.sop_class.c_str(),
                        sizeof req.AffectedSOPClassUID);
    OFStandard::strlcpy(req.AffectedSOPInstanceUID, m.sop_uid.c_str(),
                        sizeof req.AffectedSOPInstanceUID);
    req.DataSetType = DIMSE_DATASET_PRESENT;
    req.Priority = DIMSE_PRIORITY_MEDIUM;
    T_DIMSE_C_StoreRSP rsp;
    memset(&rsp, 0, sizeof rsp);
    DcmDataset *detail = NULL;
    c = DIMSE_storeUser(assoc, static_cast<T_ASC_PresentationContextID>(m.pcid), &req, NULL,
                        ds, NULL, NULL, DIMSE_NONBLOCKING, p->dimse_timeout, &rsp, &detail);
    if (c.bad()) {
        item->outcome = VG_SCU_FAILED;
        std::string all = cond_text(c);
        if (c == DIMSE_NODATAAVAILABLE)
            fmt(item->error, sizeof item->error,
                "no C-STORE response from %s:%d within %d s", p->host, p->port,
                p->dimse_timeout);
        else
            fmt(item->error, sizeof item->error,
                "association with %s:%d broke during "
                "C-STORE: %s",
                p->host, p->port, all.c_str());
        delete detail;
        return -1;
    }
    record_status(item, rsp, detail);
    delete detail;
    return 0;
}

/* Connects and negotiates. 0 with *assoc, or a code with err filled. */
int associate(const vg_scu_peer_t *p, T_ASC_Network *net, T_ASC_Parameters *params,
              T_ASC_Association **assoc, char *err, size_t len)
{
    char peer[300];
    snprintf(peer, sizeof peer, "%s:%d", p->host, p->port);
    ASC_setAPTitles(params, p->calling_ae, p->called_ae, NULL);
    OFCondition c = ASC_setPresentationAddresses(params, "localhost", peer);
    if (c.bad()) {
        fmt(err, len, "association parameters: %s", c.text());
        return VG_EDCM;
    }
    dcmConnectionTimeout.set(static_cast<Sint32>(p->acse_timeout));
    /* On failure too, *assoc may be set and own PARAMS: the caller
     * destroys it, which closes the connection. */
    c = ASC_requestAssociation(net, params, assoc);
    if (c.bad())
        return describe_connect_failure(c, params, p, err, len);
    if (ASC_countAcceptedPresentationContexts(params) == 0) {
        fmt(err, len, "%s:%d accepted the association but none of the SOP classes offered",
            p->host, p->port);
        if (ASC_releaseAssociation(*assoc).bad())
            ASC_abortAssociation(*assoc);
        return VG_EDCM;
    }
    return 0;
}

/* Sends the items on an open association, then releases it. */
void send_all(T_ASC_Association *assoc, const vg_scu_peer_t *p, vg_scu_item_t *items, int n,
              const std::vector<FileMeta> &metas, const std::vector<bool> &readable,
              int (*stop)(void *), void *arg)
{
    int usable = 1;
    for (int i = 0; i < n && usable; i++) {
        if (!readable[i] || metas[i].pcid == 0)
            continue;
        if (stop && stop(arg))
            break;
        usable = send_one(assoc, p, &items[i], metas[i]) == 0;
    }
    if (!usable || ASC_releaseAssociation(assoc).bad())
        ASC_abortAssociation(assoc);
}

} // namespace

extern "C" void vg_scu_init(int verbose)
{
    try {
        static std::once_flag once;
        std::call_once(once, [verbose]() {
            /* Debian's DCMTK leaves Nagle's algorithm on unless asked; the
             * requestor reads this at each connect. Set only when not yet
             * set, as setenv is unsafe beside threads that read it. */
            const char *v = getenv("TCP_NODELAY");
            if (!v || strcmp(v, "1") != 0)
                setenv("TCP_NODELAY", "1", 1);
            vg_dcm_network_init();
            DJDecoderRegistration::registerCodecs();
            DJLSDecoderRegistration::registerCodecs();
            DcmRLEDecoderRegistration::registerCodecs();
            if (!verbose)
                OFLog::getLogger("dcmtk.dcmtls").setLogLevel(OFLogger::FATAL_LOG_LEVEL);
        });
    } catch (...) {
        /* Nothing to report: a send made without it still works. */
    }
}

extern "C" int vg_scu_send(const vg_scu_peer_t *peer, vg_scu_item_t *items, int n,
                           int (*stop)(void *), void *arg, char *err, size_t errlen)
{
    T_ASC_Network *net = NULL;
    T_ASC_Association *assoc = NULL;
    DcmTLSTransportLayer *tls = NULL;
    int rc = 0;
    try {
        fmt(err, errlen, "%s", "");
        std::vector<FileMeta> metas(static_cast<size_t>(n));
        std::vector<bool> readable(static_cast<size_t>(n));
        int any = 0;
        for (int i = 0; i < n; i++) {
            items[i].outcome = VG_SCU_NOT_SENT;
            items[i].status = -1;
            items[i].error[0] = '\0';
            readable[i] = read_meta(&items[i], metas[i]) == 0;
            any |= readable[i] ? 1 : 0;
        }
        if (!any)
            return 0; /* every item FAILED on its own; no need to connect */
        T_ASC_Parameters *params = NULL;
        OFCondition c = ASC_initializeNetwork(NET_REQUESTOR, 0, peer->acse_timeout, &net);
        if (c.good())
            c = ASC_createAssociationParameters(&params, ASC_DEFAULTMAXPDU);
        if (c.good())
            c = add_contexts(params, metas, readable);
        if (c.bad()) {
            fmt(err, errlen, "cannot prepare an association: %s", c.text());
            rc = VG_EDCM;
        }
        if (rc == 0 && peer->tls)
            rc = setup_tls(peer, net, params, &tls, err, errlen);
        if (rc == 0)
            rc = associate(peer, net, params, &assoc, err, errlen);
        if (!assoc && params) /* else the association owns them */
            ASC_destroyAssociationParameters(&params);
        if (rc == 0)
            send_all(assoc, peer, items, n, metas, readable, stop, arg);
    } catch (...) {
        fmt(err, errlen, "unexpected DCMTK exception while sending to %s:%d", peer->host,
            peer->port);
        rc = VG_EDCM;
    }
    try {
        if (rc < 0)
            for (int i = 0; i < n; i++)
                if (items[i].outcome != VG_SCU_FAILED)
                    items[i].outcome = VG_SCU_NOT_SENT;
        if (assoc)
            ASC_destroyAssociation(&assoc); /* frees its parameters too */
        if (net)
            ASC_dropNetwork(&net);
        delete tls;
    } catch (...) {
    }
    return rc;
}
