"""Certificates for TLS tests, made with the openssl command line in a temp directory."""
import subprocess
from pathlib import Path


def _run(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class CertificateAuthority:
    """A CA that signs server and client certificates (EC P-256) in `directory`."""

    def __init__(self, directory, name="Apus Test CA"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name.replace(" ", "-")
        self.key = self.dir / f"{self.name}.key"
        self.cert = self.dir / f"{self.name}.pem"
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(self.key), "-out", str(self.cert), "-days", "30", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=self.dir)
        self.serial = 1

    def issue(self, name, common_name, dns=(), ips=(), client=False, expired=False):
        """Returns (certificate path, key path) for a leaf certificate."""
        key, csr, cert = (self.dir / f"{name}.key", self.dir / f"{name}.csr", self.dir / f"{name}.pem")
        _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
             "-out", str(csr), "-subj", f"/CN={common_name}", cwd=self.dir)
        san = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
        ext = self.dir / f"{name}.ext"
        lines = ["basicConstraints=CA:FALSE",
                 f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}"]
        if san:
            lines.append(f"subjectAltName={san}")
        ext.write_text("\n".join(lines) + "\n")
        self.serial += 1
        if expired:
            # `openssl ca` is the command-line tool that takes explicit dates.
            (self.dir / "index.txt").write_text("")
            conf = self.dir / "ca.cnf"
            conf.write_text(
                "[ca]\ndefault_ca=d\n[d]\n"
                f"database={self.dir}/index.txt\nnew_certs_dir={self.dir}\n"
                f"certificate={self.cert}\nprivate_key={self.key}\nserial={self.dir}/serial\n"
                "default_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=supplied\n")
            (self.dir / "serial").write_text(f"{self.serial:04X}\n")
            _run("ca", "-batch", "-config", str(conf), "-in", str(csr), "-out", str(cert),
                 "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-extfile", str(ext), cwd=self.dir)
        else:
            _run("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-set_serial", str(self.serial), "-days", "7", "-out", str(cert), "-extfile", str(ext), cwd=self.dir)
        return cert, key
